"""GIDM Explorer core: a federated diffusion client, gradient-inversion attacks on what it shares, and their scoring.

Three roles never reach into each other (see README):
- the client side (`client`, `diffusion`, `federated`) makes the update that leaves the device;
- the attacks (`attacks`) see only the model, the shared update and the threat model;
- the analysis (`metrics`, `evaluation`) holds the truth and scores what the attacks produce.
"""

__version__ = "0.1.0"
