"""Point-in-time recovery with pgBackRest: commands, the info model, the PITR restore."""
