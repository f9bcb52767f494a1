#!/usr/bin/env bash
# A wheel built from the repository, installed in a fresh virtual environment outside it,
# predicts with the shipped model and gives the same class map as the checkout.
#
#   bash benchmarks/wheel_check.sh [WORKDIR]
#
# Needs the package registry (the wheel's dependencies) and the local torch wheels;
# takes a few minutes. Prints PASS or FAIL with the reason.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-$(mktemp -d /tmp/geoseg-wheel-XXXXXX)}"
mkdir -p "$WORK"
PY="${PYTHON:-python3}"

echo "== building the wheel"
"$PY" -m pip wheel --no-deps -q -w "$WORK/dist" "$ROOT"
WHEEL=$(ls "$WORK"/dist/geoseg-*.whl)
echo "   $WHEEL"
unzip -l "$WHEEL" | grep -E "geoseg/(py.typed|models/__init__|io/grid)" >/dev/null \
  || { echo "FAIL: the wheel misses package files"; exit 1; }
if unzip -l "$WHEEL" | grep -E " (data|models|configs)/" >/dev/null; then
  echo "FAIL: the wheel ships sample data or models"; exit 1
fi

echo "== installing it in a fresh venv in $WORK/venv"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip
"$WORK/venv/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
"$WORK/venv/bin/python" -m pip install -q "$WHEEL" torch==2.14.1 torchvision==0.29.1

echo "== predicting from $WORK/run (outside the repository), with the shipped model"
mkdir -p "$WORK/run"
cp "$ROOT/models/nc_landcover.safetensors" "$WORK/run/model.safetensors"
cd "$WORK/run"
"$WORK/venv/bin/python" - "$ROOT" <<'PYEOF'
import sys
from pathlib import Path

import geoseg
from geoseg.demo import make_nc_mosaic

root = Path(sys.argv[1])
where = Path(geoseg.__file__).resolve()
assert root not in where.parents, f"geoseg imported from the checkout: {where}"
print("   geoseg", geoseg.__version__, "from", where.parent)
make_nc_mosaic("mosaic", data_dir=root / "data" / "nc-landsat7-landcover")
PYEOF
"$WORK/venv/bin/geoseg" predict model.safetensors mosaic -o wheel.tif --quiet
echo "== the same prediction from the checkout"
cd "$ROOT"
GEOSEG_CACHE_DIR="$WORK/cache" "$ROOT/.venv/bin/geoseg" predict models/nc_landcover.safetensors \
  "$WORK/run/mosaic" -o "$WORK/run/checkout.tif" --quiet --overwrite
"$ROOT/.venv/bin/python" - "$WORK/run" <<'PYEOF'
import sys
from pathlib import Path

import numpy as np
import rasterio

run = Path(sys.argv[1])
with rasterio.open(run / "wheel.tif") as a, rasterio.open(run / "checkout.tif") as b:
    same = np.array_equal(a.read(), b.read()) and a.transform == b.transform and a.crs == b.crs
    n = int((a.read(1) != a.nodata).sum())
print(("PASS" if same else "FAIL") + f": wheel class map == checkout class map ({n} valid pixels)")
sys.exit(0 if same else 1)
PYEOF
