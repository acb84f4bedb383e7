# portside's image. Build from the repository root: docker build -t portside .
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY master ./master
COPY worker ./worker
RUN pip install --no-cache-dir . && rm -rf /src

WORKDIR /
EXPOSE 80 8080
ENTRYPOINT ["portside"]
CMD ["--config", "/etc/portside/portside.toml"]
