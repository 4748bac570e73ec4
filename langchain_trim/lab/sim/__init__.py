"""A calibrated TRIM simulator: the paper's POMDP, driven by any :class:`RoutingPolicy`.

Real TRIM runs cost GPU hours; the simulator replays the same decision problem (hidden
state S0/S1/S2, PRM observations, termination hazard, step lengths) in milliseconds so
that policies can be swept, trained and compared.  Pure Python: no numpy needed.  Its
parameters, :class:`~langchain_trim.policies.calibration.Calibration`, live with the
policies (TRIM-POMDP plans on them); they are re-exported here.
"""

from langchain_trim.lab.sim.env import EpisodeResult, SimEnv, SimSummary
from langchain_trim.lab.sim.fit import fit_calibration
from langchain_trim.policies.calibration import Calibration, TokenModel

__all__ = [
    "Calibration",
    "EpisodeResult",
    "SimEnv",
    "SimSummary",
    "TokenModel",
    "fit_calibration",
]
