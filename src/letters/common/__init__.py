"""What every layer uses: one-line errors, atomic files, config checks, the commands' entry."""
