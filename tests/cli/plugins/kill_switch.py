"""A callback the fault-injection test adds through the command line
(``+callbacks.kill._target_=kill_switch.KillAtEpoch``): SIGKILL this process when a given
epoch starts, counting the baseline fit's epochs and then the pruning fit's. The epoch
before it has finished and its checkpoint is on disk."""

import os
import signal
import time

import lightning as L

from pl_pruning import PhaseController


class KillAtEpoch(L.Callback):
    def __init__(self, epoch: int, baseline_epochs: int) -> None:
        self.epoch, self.baseline_epochs = epoch, baseline_epochs

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pruning = any(isinstance(c, PhaseController) for c in trainer.callbacks)
        if trainer.current_epoch + (self.baseline_epochs if pruning else 0) == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


class PreemptAtEpoch(L.Callback):
    """Send this process the signal a cluster sends before it preempts a job (SIGUSR2, the
    one submitit's sbatch scripts ask for) when pruning epoch ``epoch`` starts, once: the
    ``marker`` file says it was sent, so the requeued job runs to the end."""

    def __init__(self, epoch: int, marker: str) -> None:
        self.epoch, self.marker = epoch, marker

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pruning = any(isinstance(c, PhaseController) for c in trainer.callbacks)
        if pruning and trainer.current_epoch == self.epoch and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGUSR2)


class HoldAtEpoch(L.Callback):
    """While the file ``flag`` exists, the pruning fit waits at the start of epoch ``epoch``
    (the previous epoch's checkpoint is on disk) until the process is ended, and says so by
    creating ``<flag>.held``: a test requeues the cluster job there. Without the file it
    does nothing, so a run with it computes what a run without it does."""

    def __init__(self, epoch: int, flag: str) -> None:
        self.epoch, self.flag = epoch, flag

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pruning = any(isinstance(c, PhaseController) for c in trainer.callbacks)
        if pruning and trainer.current_epoch == self.epoch and os.path.exists(self.flag):
            open(f"{self.flag}.held", "w").close()
            while True:  # until the cluster ends the job
                time.sleep(1)
