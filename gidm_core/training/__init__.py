"""The FedAvg trainer that made the bundled models (`trainer.py`) and its command, `python -m gidm_core train`."""
