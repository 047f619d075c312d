# hfdav: nginx (a home page about the drive at /, WebDAV under /dav/) in front of the gateway on gunicorn.
# Runs as a Hugging Face Docker Space as it is (port 7860, uid 1000, writes only to $HOME,
# /tmp and /data) and anywhere with `docker compose up` (see docker-compose.yml).
FROM python:3.11-slim-bookworm

# nginx from Debian; nothing else from apt
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /etc/nginx/sites-enabled/* \
 && useradd --create-home --uid 1000 user \
 && mkdir -p /data && chown user:user /data

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Dependencies first, from pyproject.toml alone: this layer is rebuilt only when they change.
# The venv has no pip of its own; the base image's pip installs into it.
COPY pyproject.toml /tmp/src/pyproject.toml
RUN python -m venv --without-pip /opt/venv \
 && python -c "import tomllib; p = tomllib.load(open('/tmp/src/pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['postgres']))" > /tmp/src/requirements.txt \
 && pip --python /opt/venv/bin/python install -r /tmp/src/requirements.txt

# The package itself (small, changes often).
COPY README.md /tmp/src/README.md
COPY gateway /tmp/src/gateway
RUN pip --python /opt/venv/bin/python install --no-deps /tmp/src && rm -rf /tmp/src

COPY nginx.conf boot.py /app/
COPY home /app/home

USER user
# HFDAV_DATA_DIR: the drive lives in /data, for the server and for `podman exec … hfdav stats` alike
ENV HOME=/home/user \
    HFDAV_DATA_DIR=/data
WORKDIR /home/user
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s \
  CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:7860/healthz', timeout=8).status != 200)"
CMD ["python", "/app/boot.py"]
