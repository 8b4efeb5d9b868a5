"""The local runtime: moto's server plays AWS, a dispatcher plays Lambda (DESIGN §7)."""
