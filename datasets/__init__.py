"""Datasets: InterHand2.6M readers (official layout and IntagHand pkls) and synthetic two-hand data."""
