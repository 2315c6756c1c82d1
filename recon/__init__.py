"""Image to two hands: detection, camera, initialisation and fitting orchestration."""
