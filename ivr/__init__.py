"""ARI controller and call flows of the IVR/PBX product."""
