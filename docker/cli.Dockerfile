# farm CLI (and CPU worker): submit, sweep, results, db upgrade. No CUDA.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1

# CPU-only torch keeps the image small; farm's other dependencies come from pyproject.toml.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch torchvision

WORKDIR /src
COPY pyproject.toml README.md ./
COPY farm ./farm
RUN pip install . && python -c "import farm.cli.app"

ENV FARM_HOME=/farm
VOLUME ["/farm"]
WORKDIR /farm
ENTRYPOINT ["farm"]
CMD ["--help"]
