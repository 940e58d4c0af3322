# Sourced at the start of every device call (bench/gpu/run.sh does it): installs the carried
# wheels, points the farm at the carried data and the precompiled kernels, and offers
# start_redis for the worker tests.
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl .gpu/pywheels/*.whl 2>/dev/null || true
export PYTHONPATH=/tmp/site:$PWD FARM_DATA_DIR=$PWD/.gpu/data FARM_HOME=/tmp/farm-home
mkdir -p /tmp/farm-home /tmp/kc
# the cubins stay in /tmp/kc while the machine is warm: later calls skip the unpacking (and
# find the csrgen code an earlier call compiled)
if [ -f .kc/kcache.tar.xz ] && [ ! -f /tmp/kc/.extracted ]; then
  tar xJf .kc/kcache.tar.xz -C /tmp/kc --strip-components=1 && touch /tmp/kc/.extracted
fi
export FARM_KERNEL_CACHE=/tmp/kc
start_redis() {
  R=/tmp/rr; mkdir -p $R; for f in .gpu/redis/*.deb; do dpkg -x "$f" $R; done
  export LD_LIBRARY_PATH=$R/usr/lib/x86_64-linux-gnu
  $R/usr/bin/redis-server --port 6379 --bind 127.0.0.1 --save '' --daemonize yes >/dev/null
  sleep 0.5; $R/usr/bin/redis-cli ping
}
