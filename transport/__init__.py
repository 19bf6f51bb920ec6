"""How delivery jobs travel from the store to the workers: embedded (the database) or RabbitMQ."""
