# farm GPU worker: one container per GPU (see compose.yaml).
# A CUDA *devel* base, because PyCUDA compiles the sparse kernels at run time with nvcc.
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/farm \
    PATH=/opt/farm/bin:/usr/local/cuda/bin:$PATH \
    CUDA_ROOT=/usr/local/cuda

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential git \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv $VIRTUAL_ENV

# torch built for CUDA 12.8 first, so farm's own install does not pull a CPU build.
RUN pip install --index-url https://download.pytorch.org/whl/cu128 torch torchvision

WORKDIR /src
COPY pyproject.toml README.md ./
COPY farm ./farm
# The [gpu] extra builds PyCUDA here, against this image's CUDA headers.
RUN pip install ".[gpu]" && python -c "import pycuda, farm, celery, sqlalchemy"

ENV FARM_HOME=/farm FARM_KERNEL_CACHE=/farm/kernels
VOLUME ["/farm"]
WORKDIR /farm
ENTRYPOINT ["farm", "worker"]
CMD ["--gpu", "0"]
