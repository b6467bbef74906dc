"""Running the loop's parts in more than one process.

`data_parallel`: the learner's torch.distributed group (DDP / FSDP2, gloo on CPU, NCCL on GPU).
`ray_runtime`: rollout workers, reward workers and learner ranks as Ray actors (`ray_workers` is
what runs inside them). Nothing is imported here, so `import postrl.distributed.data_parallel`
never pays for Ray.
"""
