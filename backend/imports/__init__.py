"""Batch import (批量导入): batches, batch files, the job queue, signer workers, the sealed spool."""
