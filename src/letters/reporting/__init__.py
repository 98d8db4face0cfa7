"""What a user reads after training: sweep tables, plots, a run's pictures, the sweep-end
summary, and the reference's tables to compare with."""
