"""Documents the hub makes for people to keep (the PDF receipt); no HTTP, no SQL."""
