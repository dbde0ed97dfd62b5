# wagate in a container: the wheel built from this tree, its dependencies from the
# hash-checked lock. Not the only way (pip install . works anywhere); see
# docs/production.md. Build: docker build -t wagate .
# Run:   docker run -p 8080:8080 -v wagate-data:/var/lib/wagate/data wagate
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir uv==0.13.9
COPY pyproject.toml README.md ./
COPY src ./src
RUN uv build --wheel --out-dir /dist

FROM python:3.11-slim
RUN useradd --system --create-home --home-dir /var/lib/wagate wagate
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock \
    && rm /tmp/requirements.lock
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-cache-dir --no-deps /tmp/dist/*.whl && rm -rf /tmp/dist
USER wagate
WORKDIR /var/lib/wagate
# SQLite by default (under ./data); set WAGATE_DATABASE_URL for PostgreSQL.
ENV WAGATE_DATA_DIR=/var/lib/wagate/data
VOLUME /var/lib/wagate/data
EXPOSE 8080
CMD ["wagate", "serve", "--host", "0.0.0.0", "--port", "8080"]
