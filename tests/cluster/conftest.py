"""The SLURM cluster the tests of this folder submit to (minicluster.py): started once per
session where the packages are installed, stopped at its end."""

import pytest
from minicluster import SlurmCluster, missing_reason


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster.start(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()
