"""A calibrated TRIM simulator: the paper's POMDP, driven by any :class:`RoutingPolicy`.

Real TRIM runs cost GPU hours; the simulator replays the same decision problem (hidden
state S0/S1/S2, PRM observations, termination hazard, step lengths) in milliseconds so
that policies can be swept, trained and compared.  Pure Python: no numpy needed.
"""

from langchain_trim.sim.calibration import Calibration, TokenModel
from langchain_trim.sim.env import EpisodeResult, SimEnv, SimSummary
from langchain_trim.sim.fit import fit_calibration

__all__ = [
    "Calibration",
    "EpisodeResult",
    "SimEnv",
    "SimSummary",
    "TokenModel",
    "fit_calibration",
]
