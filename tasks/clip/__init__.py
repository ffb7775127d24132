"""CLIP: the encoder (built once per process and device) and the devices embed shards take,
one model per GPU. No Prefect."""
