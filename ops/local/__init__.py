"""The local runtime: moto's server plays AWS, a dispatcher plays Lambda (README, "Run it
locally")."""
