"""Stand-in of ais_bench.infer.utils: the TXT writer, with ais_bench's own numpy calls.

Upstream (Ascend/tools ais_bench/infer/utils.py save_data_to_files; msit the same, L122): the array
is reshaped to (-1, last dim) and each row written with `np.savetxt(f, np.c_[row], fmt=fmt,
newline=" ")` then b"\\n": np.c_ makes the row a column, so every value is followed by a space and
a row ends " \\n". fmt is "%f" for float16/32/64 and "%d" otherwise (get_ndata_fmt).
"""

import numpy as np


def get_ndata_fmt(ndata):
    if ndata.dtype in (np.float16, np.float32, np.float64):
        return "%f"
    return "%d"


def save_data_to_files(file_path, ndata):
    outdata = ndata.reshape(-1, ndata.shape[-1])
    fmt = get_ndata_fmt(outdata)
    with open(file_path, "wb") as f:
        for i in range(outdata.shape[0]):
            np.savetxt(f, np.c_[outdata[i]], fmt=fmt, newline=" ")
            f.write(b"\n")
