"""What every part of paser shares: registries by name, console output and file helpers; imports nothing heavy."""
