"""GIDM Explorer: `python app.py` serves the app at http://127.0.0.1:7860 (Hugging Face Spaces entry point too).

GRADIO_SERVER_NAME / GRADIO_SERVER_PORT override the address; GIDM_THREADS sets torch's CPU threads (default 2),
GIDM_CONCURRENCY the number of attacks run at once (default 2) and GIDM_QUEUE_SIZE the queue's length (default 16).
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def main() -> None:
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("GIDM_THREADS", "2"))))
    from app import create_app, launch_kwargs

    demo = create_app()
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), **launch_kwargs())


if __name__ == "__main__":
    main()
