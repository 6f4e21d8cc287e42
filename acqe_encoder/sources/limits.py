"""Every bound the checkpoint readers enforce, in one place (rationale: `acqe_encoder/sources/README.md`).

A reader refuses an input beyond any of these with a one-line `SourceError`; none of them is reached by
a real Stable Diffusion checkpoint (SD v1.4's `.ckpt`: 4.3 GB, 1,141 tensors, a 150 kB pickle).
"""
from acqe_format import constants as _C

# --- files ---------------------------------------------------------------------------------------
MAX_CONFIG_BYTES = 1 << 20            # a diffusers config.json / scheduler_config.json, an acqe_configs string
MAX_SAFETENSORS_HEADER = 100_000_000  # safetensors' own MAX_HEADER_SIZE
HASH_CHUNK = 1 << 24                  # bytes per read when hashing the files a conversion read

# --- JSON (configs, safetensors headers) ---------------------------------------------------------
# Configs end up inside the .acqe METADATA at depth 2 (metadata -> configs -> unet), whose nesting limit
# is acqe_format's MAX_JSON_DEPTH: what is read here can always be written there.
MAX_CONFIG_DEPTH = _C.MAX_JSON_DEPTH - 2
MAX_SAFETENSORS_HEADER_DEPTH = 4      # {name: {"shape": [..]}} is 3 deep; __metadata__ is {str: str}

# --- torch zip checkpoints -----------------------------------------------------------------------
MAX_PICKLE_BYTES = 64 << 20           # data.pkl (SD v1.4: 150 kB; the largest LLM shards: a few MB)
MAX_TUPLE_DEPTH = 32                  # tuples inside tuples (hashing one recurses in C without a limit)
MAX_TUPLE_NODES = 1 << 20             # values a tuple holds, counted as a tree (shared tuples count each time)
MAX_MEMO_INDEX = 1 << 24              # pickle memo slots (the C unpickler allocates up to the index)
MAX_STORAGE_KEY_CHARS = 64            # "data/<key>" record names; torch writes str(int)

# Expanded or overlapping views (zero or small strides): a tensor may materialise to more bytes than the
# storage bytes its view spans only by EXPANSION_FACTOR, unless it is at most EXPANSION_FREE_BYTES.
EXPANSION_FACTOR = 16
EXPANSION_FREE_BYTES = 64 << 10
# All tensors a conversion keeps, materialised, and all deflated records it inflates: at most
# TOTAL_FACTOR x the checkpoint's size + TOTAL_FREE_BYTES (shared storages and compression included).
TOTAL_FACTOR = 16
TOTAL_FREE_BYTES = 16 << 20

# --- what the .acqe side can hold (checked at read time, so the writer never sees it) -------------
MAX_RANK = _C.MAX_RANK
MAX_NAME_BYTES = _C.MAX_NAME_BYTES
MAX_TENSORS = _C.MAX_TENSORS
MAX_DIM = (1 << 63) - 1
