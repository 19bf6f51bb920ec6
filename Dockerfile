# The hub's image: API, relay, workers and simulators all run from it (see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt ./
COPY . .
# The workers and the relay run under python -OO ([memory] optimized_bytecode): their bytecode
# is compiled here, where /app and site-packages are still writable.
RUN pip install --no-cache-dir --disable-pip-version-check -c constraints.txt -e . \
    && python -OO -m compileall -q /app /usr/local/lib/python3.11/site-packages \
    && useradd --create-home --uid 10001 crocevia && mkdir -p var && chown crocevia var
USER crocevia
CMD ["python", "hub.py", "serve", "--host", "0.0.0.0"]
