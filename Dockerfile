# The kilowatt operator image. Build and push (any OCI builder; no Docker daemon? see scripts/build-image.sh):
#   docker build -t REGISTRY/kilowatt:0.1.0 . && docker push REGISTRY/kilowatt:0.1.0
# then `helm install kilowatt charts/kilowatt --set image.repository=REGISTRY/kilowatt`.
#
# Two stages: the first installs kilowatt and its dependencies (all of them wheels from PyPI) into a virtual
# environment; the second copies only that environment onto the same slim base, so no compiler, pip cache or
# source tree ships. It runs as UID 65532 (non-root) and writes nothing outside /tmp, so it works with a read-only
# root filesystem (the chart mounts an emptyDir at /tmp).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m venv /opt/kilowatt \
 && /opt/kilowatt/bin/pip install --only-binary=:all: . \
 && /opt/kilowatt/bin/pip uninstall -y pip \
 && find /opt/kilowatt -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/kilowatt/bin/python -m compileall -q /opt/kilowatt/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="kilowatt" \
      org.opencontainers.image.description="LLM inference at the lowest electricity + hardware cost that meets each service's latency SLO" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/kilowatt /opt/kilowatt
ENV PATH=/opt/kilowatt/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["kilowatt"]
CMD ["run"]
