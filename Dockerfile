# The image every Kubernetes job of profiles/k8s runs in: Python 3.12, exactly the pinned stack of
# requirements.lock.txt (Snakemake, its executor and storage plugins, the compute stack with rasterio's bundled GDAL)
# and the eostats package. The controller must run the same Snakemake version (it is pinned in the same lock file).
#
# Build and push (the tag is the eostats version, the one profiles/k8s/config.yaml names):
#   docker build -t ghcr.io/eostats/eostats:0.1.0 .
#   docker push ghcr.io/eostats/eostats:0.1.0
# For bit-for-bit rebuilds pin the base image by digest: --build-arg PYTHON_IMAGE=python:3.12-slim-bookworm@sha256:...
# The build needs the network (base image, PyPI); the image itself needs none at run time.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- build: a virtual environment with the locked stack (psycopg2, pulled in by datacube, compiles against libpq)
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev libpq-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements.lock.txt ./
RUN python -m pip install -r requirements.lock.txt
# Snakemake starts every pod with `pip install --target .snakemake/pip-deployments <storage plugins>`: keep wheels of
# the locked plugin versions in the image and serve that install from them (see PIP_* below).
RUN python -m pip download --no-deps --only-binary=:all: --dest /opt/eostats/wheels \
    $(grep -E '^snakemake-storage-plugin-' requirements.lock.txt)
# the package itself, not editable
COPY pyproject.toml README.md ./
COPY eostats ./eostats
RUN python -m pip install --no-deps . \
    && python -c "import eostats, snakemake, rasterio; print('eostats image ok, GDAL', rasterio.__gdal_version__)"

# --- run
FROM ${PYTHON_IMAGE}
# git: Snakemake lists the workflow's sources with `git ls-files` when it runs without a shared file system;
# libpq5: psycopg2's runtime library
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends git ca-certificates libpq5 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/eostats/wheels /opt/eostats/wheels
# pip serves the pods' plugin install from the baked wheels; GDAL on object storage: no listing of a COG's
# "directory" on open, retries of transient HTTP errors
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INDEX=1 \
    PIP_FIND_LINKS=/opt/eostats/wheels \
    PIP_NO_DEPS=1 \
    GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR \
    GDAL_HTTP_MAX_RETRY=5 \
    GDAL_HTTP_RETRY_DELAY=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache

# The workflow files too, for running the controller from the image (pods get theirs from the run's source archive).
WORKDIR /opt/eostats
COPY Snakefile ./
COPY rules ./rules
COPY scripts ./scripts
COPY config ./config
COPY profiles ./profiles

# Jobs run as an unprivileged user; Kubernetes mounts a writable emptyDir at /workdir.
RUN useradd --create-home --uid 1000 eostats
USER 1000
WORKDIR /workdir
CMD ["python", "-m", "snakemake", "--version"]
