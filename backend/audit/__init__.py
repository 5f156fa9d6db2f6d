"""The audit log (责任倒查): the hash chain and its signed checkpoints."""
