#!/bin/bash
# Prepares, on the development machine, what a call of the `device` tool carries (see
# ../shared/device/README.md): the PyCUDA wheel, the farm's own dependencies as Python 3.12
# wheels, Fashion-MNIST, Redis as Debian packages, and the fixed kernel families' cubins
# precompiled for sm_90 (xz, ~7 MB). Run from the repository root after `bash .ci/install`;
# about 12 minutes on 2 cores (the precompile), idempotent.
#
#     bash bench/gpu/setup.sh            # then: run(command="bash bench/gpu/run.sh SCRIPT", carry=CARRY)
#
# CARRY = [".gpu", ".kc/kcache.tar.xz"] (both in .gitignore: they travel only when carried).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .gpu/wheels .gpu/pywheels .gpu/data/fashion-mnist .gpu/redis .kc
cp ../shared/wheels/*.whl .gpu/wheels/
cp /usr/share/datasets/fashion-mnist/*.gz .gpu/data/fashion-mnist/
[ -n "$(ls .gpu/redis)" ] || (cd .gpu/redis && apt-get download redis-server redis-tools libjemalloc2 liblzf1)
if [ -z "$(ls .gpu/pywheels)" ]; then
  (cd .gpu/pywheels && pip3 download -q --dest . --only-binary=:all: --python-version 3.12 \
     --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
     --implementation cp celery redis sqlalchemy alembic typer rich pyyaml pytest \
   && rm -f mako* Mako* typing_extensions* markupsafe* MarkupSafe* psycopg2*)  # the GPU image has these
fi
cp bench/gpu/env.sh .gpu/env.sh
if [ ! -f .kc/kcache.tar.xz ]; then
  FARM_KERNEL_CACHE=$PWD/.kcache .venv/bin/python bench/kernels_layers.py --precompile --skip-generated
  FARM_KERNEL_CACHE=$PWD/.kcache .venv/bin/python bench/whole_model.py --precompile --skip-generated
  tar cf - .kcache | xz -T2 > .kc/kcache.tar.xz
fi
du -sh .gpu .kc
