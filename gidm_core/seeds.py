"""Independent random streams for the three parties of a run, derived from the user's seeds.

`torch.Generator().manual_seed(s)` twice gives identical draws, so a client and an attacker seeded with the same
number would share their noise: the attacker's first `randn` would *be* the client's private eps. Every party
therefore draws from its own stream, `numpy.random.SeedSequence` keyed by (role, seed): equal user seeds still give
unrelated streams, and no party can reach another's draws by choosing its seed.
"""

from __future__ import annotations

import numpy as np
import torch

ROLES = ("client", "defence", "attacker", "control")
MAX_SEED = 2**63 - 1


def stream(seed: int, role: str) -> torch.Generator:
    """A CPU generator for `role` ("client": eps and t; "defence": its noise; "attacker": initial guesses;
    "control": a control run's stand-in update, `control.py`)."""
    if role not in ROLES:
        raise ValueError(f"unknown random-stream role {role!r}: choose one of {', '.join(ROLES)}")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**63 - 1], got {seed}")
    state = np.random.SeedSequence([ROLES.index(role), seed]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def derive(seed: int, *keys: int) -> int:
    """A seed in [0, MAX_SEED] for one part of a run, keyed by non-negative `keys` (e.g. client c in round r of a
    federation seeded `seed`): distinct keys give unrelated seeds, each then used through `stream` like any other."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1
