"""`python -m runner [overrides]`: train the composed config and log every layer to TensorBoard.

The run's files go to Hydra's run dir: .hydra/, tb/, model.pt, checkpoint.pt, metrics.json.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from runner.config import CONF_DIR, attach_choices, check_resolves
from runner.errors import exit_on_config_error

log = logging.getLogger("runner")


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Train one job; a bad config prints one line and exits with code 2."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    attach_choices(cfg, hydra_cfg.runtime.choices)
    run_dir = Path(hydra_cfg.runtime.output_dir)
    metrics = exit_on_config_error(_checked_train)(cfg, run_dir)
    log.info(
        "loss train %.6g -> %.6g, val %.6g -> %.6g (%d steps, %.1f steps/s on %s)",
        metrics["initial_train_loss"], metrics["final_train_loss"],
        metrics["initial_val_loss"], metrics["final_val_loss"],
        metrics["steps"], metrics["steps_per_s"], metrics["device"],
    )  # fmt: skip
    print(f"run dir: {run_dir}")
    print(f"tensorboard --logdir {run_dir / 'tb'}")


def _checked_train(cfg: DictConfig, run_dir: Path) -> dict:
    from runner.train import train

    check_resolves(cfg)
    return train(cfg, run_dir)


if __name__ == "__main__":
    main()
