# The image every Kubernetes job of profiles/k8s runs in: Python 3.12, exactly the pinned stack of
# requirements.lock.txt (Snakemake, its executor and storage plugins, the compute stack with rasterio's bundled GDAL)
# and the eostats package. The controller must run the same Snakemake version (it is pinned in the same lock file).
#
# Build and push (the tag is the eostats version, the one profiles/k8s/config.yaml names):
#   docker build -t ghcr.io/eostats/eostats:0.1.0 .
#   docker push ghcr.io/eostats/eostats:0.1.0
# For bit-for-bit rebuilds pin the base image by digest: --build-arg PYTHON_IMAGE=python:3.12-slim-bookworm@sha256:...

ARG PYTHON_IMAGE=python:3.12-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# git: Snakemake lists the workflow's sources with `git ls-files` when it runs without a shared file system.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/eostats

# The pinned stack first: this layer is rebuilt only when the lock file changes.
COPY requirements.lock.txt ./
RUN python -m pip install -r requirements.lock.txt

# Snakemake starts every pod with `pip install --target .snakemake/pip-deployments <storage plugins>`.
# Serve that from wheels baked into the image, so pods need no package index and get the pinned plugin version.
RUN mkdir -p /opt/eostats/wheels \
    && python -m pip download --no-deps --only-binary=:all: --dest /opt/eostats/wheels \
       $(grep -E '^snakemake-storage-plugin-' requirements.lock.txt)
ENV PIP_NO_INDEX=1 \
    PIP_FIND_LINKS=/opt/eostats/wheels \
    PIP_NO_DEPS=1

# The package itself (not editable), plus the workflow files for running the controller from the image.
COPY pyproject.toml README.md ./
COPY eostats ./eostats
RUN python -m pip install --no-deps . \
    && python -c "import eostats, snakemake, rasterio; print('eostats image ok, GDAL', rasterio.__gdal_version__)"
COPY Snakefile ./
COPY rules ./rules
COPY scripts ./scripts
COPY config ./config
COPY profiles ./profiles

# GDAL on object storage: do not list the "directory" of every COG opened, retry transient HTTP errors.
ENV GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR \
    GDAL_HTTP_MAX_RETRY=5 \
    GDAL_HTTP_RETRY_DELAY=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache

# Jobs run as an unprivileged user; Kubernetes mounts a writable emptyDir at /workdir.
RUN useradd --create-home --uid 1000 eostats
USER 1000
WORKDIR /workdir
CMD ["python", "-m", "snakemake", "--version"]
