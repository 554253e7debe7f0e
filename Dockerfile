# The Modelbay web/gateway and worker image (docker-compose.yml runs it as web, worker, beat).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# MODELBAY_IN_CONTAINER: the local runtime backend refuses to start instances here (model
# code would run inside the worker's container, next to the Docker socket); use docker.
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 \
    MODELBAY_DATA_DIR=/data MODELBAY_STATIC_ROOT=/app/staticfiles \
    MODELBAY_IN_CONTAINER=1 MODELBAY_RUNTIME_BACKEND=docker
WORKDIR /app
COPY requirements.txt ./
COPY runtime/requirements.txt runtime/requirements.txt
RUN pip install -r requirements.txt
COPY . .
# uid 10001 is the runtime containers' user too: the gateway (web) and the worker's probes
# call their Unix sockets in folders only that uid may enter (0700).
RUN useradd --system --uid 10001 --home /app modelbay \
    && mkdir -p /data && chown modelbay /data \
    && MODELBAY_DATA_DIR=/tmp/build SECRET_KEY=build python manage.py collectstatic --noinput -v 0 \
    && rm -rf /tmp/build
USER modelbay
EXPOSE 8000
# gunicorn.conf.py: the ASGI application on uvicorn workers; WEB_CONCURRENCY of them.
ENV WEB_CONCURRENCY=2
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--no-control-socket"]
