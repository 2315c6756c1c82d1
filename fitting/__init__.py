"""Fitting MANO parameters of both hands to an observation, guided by the two-hand prior."""

from fitting.observation import Observation
from fitting.optimize import FitConfig, FitResult, fit

__all__ = ["Observation", "FitConfig", "FitResult", "fit"]
