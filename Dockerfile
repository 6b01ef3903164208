# The controller's own image. It drives the host's Docker engine, so run it with the engine's
# socket mounted and a data volume, e.g.:
#   docker run -v /var/run/docker.sock:/var/run/docker.sock \
#              -v /var/lib/sandgate:/var/lib/sandgate sandgate/controller run /code/hello.py
# Bind mounts it creates for sandboxes name paths under SANDGATE_DATA_DIR, so that directory
# must be the same path inside and outside (mount it at the same place).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
WORKDIR /opt/sandgate
COPY pyproject.toml README.md ./
COPY controller ./controller
COPY profiles ./profiles
COPY policies ./policies
COPY sandbox_images ./sandbox_images
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir -e .
ENV PATH=/opt/venv/bin:$PATH SANDGATE_DATA_DIR=/var/lib/sandgate
ENTRYPOINT ["sandgate"]
CMD ["--help"]
