# gen3d's image: `gen3d serve` on port 8093, every Python package from the hashed locks.
#   podman build --format docker -t gen3d:0.1.0 .    (or docker build; README "Packages and containers"
#                                                      runs it with a GPU and pushes it)
# Build arguments:
#   BASE_IMAGE  Python 3.11 on glibc (default: Debian's slim Python), or Ray's own image of this
#               Ray and Python (rayproject/ray:2.60.0-py311-cu128, the KubeRay convention)
#   TORCH       cuda: torch's CUDA build from PyPI (requirements/torch-cuda.lock, the default);
#               cpu: its CPU build (requirements/torch-cpu.lock), for CPU-only hosts and the image test
#   PIP_FIND_LINKS, PIP_EXTRA_INDEX_URL, PIP_CERT  pip's own settings, unset unless given: more
#               places to look (a folder of local wheels) and a CA bundle for a TLS-inspecting proxy
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TORCH=cuda
ARG PIP_FIND_LINKS
ARG PIP_EXTRA_INDEX_URL
ARG PIP_CERT
USER 0
ENV VIRTUAL_ENV=/opt/gen3d \
    PATH=/opt/gen3d/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

# Dependencies first, in their own layer: a change to gen3d's code does not reinstall them.
COPY requirements/ /tmp/gen3d/requirements/
RUN python3 -m venv /opt/gen3d \
    && pip install --no-cache-dir --require-hashes --no-deps \
        -r "/tmp/gen3d/requirements/torch-${TORCH}.lock" -r /tmp/gen3d/requirements/runtime.lock

COPY . /tmp/gen3d/src/
# setuptools comes from the lock (--no-build-isolation): nothing unpinned enters the image.
RUN pip install --no-cache-dir --no-deps --no-build-isolation /tmp/gen3d/src \
    && rm -rf /tmp/gen3d \
    && groupadd --gid 10001 gen3d \
    && useradd --create-home --uid 10001 --gid 10001 --shell /bin/bash gen3d

# Not root; numeric, so a host without this passwd entry can still run the image as this user.
USER 10001:10001
WORKDIR /home/gen3d
# The weights (FLUX.1-schnell, TripoSR, and rembg's IS-Net beside them) and FLUX's compile cache
# (configs/fast.yaml: ~/.cache/gen3d/compile) live on volumes, so a new container starts warm.
ENV HOME=/home/gen3d \
    HF_HOME=/home/gen3d/.cache/huggingface \
    REMBG_HOME=/home/gen3d/.cache/huggingface/rembg
RUN mkdir -p /home/gen3d/.cache/huggingface/rembg /home/gen3d/.cache/gen3d
VOLUME ["/home/gen3d/.cache/huggingface", "/home/gen3d/.cache/gen3d"]

EXPOSE 8093
# /health answers 200 once a warm-up job has passed every stage; a cold start downloads weights first.
HEALTHCHECK --interval=30s --timeout=15s --start-period=30m --retries=3 \
    CMD ["gen3d", "health", "--url", "http://127.0.0.1:8093"]
# Every interface, so the published port reaches the service: gen3d serve refuses to start that
# way without GEN3D_API_KEY, unless --allow-no-api-key is added after the config.
ENTRYPOINT ["gen3d", "serve"]
CMD ["serve_config.yaml", "--host", "0.0.0.0"]
