"""Evaluation: reconstruction metrics (MPJPE, PA-MPJPE, MPVPE, MRRPE) and generative-model metrics."""
