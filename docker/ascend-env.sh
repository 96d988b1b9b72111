#!/bin/bash
# `pnas-eval` in the Ascend jobs image: CANN's environment (PATH, LD_LIBRARY_PATH, PYTHONPATH and
# ASCEND_* for ATC, ACL and ais_bench), then the stage. Installed as /opt/pnas-eval/bin/pnas-eval.
toolkit="${ASCEND_TOOLKIT_SET_ENV:-/usr/local/Ascend/ascend-toolkit/set_env.sh}"
if [ -f "$toolkit" ]; then
    # shellcheck disable=SC1090
    source "$toolkit"
else
    echo "pnas-eval: $toolkit not found: ATC and ais_bench will not run (is this a CANN image?)" >&2
fi
# the driver, where the Ascend Docker Runtime mounts it (/usr/local/Ascend/driver), or where the operator
# mounts it as a hostPath when PNAS_OPERATOR_ASCEND_DRIVER_PATH is set: ACL loads its libraries
driver="${ASCEND_DRIVER_PATH:-/usr/local/Ascend/driver}"
export LD_LIBRARY_PATH="$driver/lib64:$driver/lib64/common:$driver/lib64/driver${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec python3 -m pnas_jobs "$@"
