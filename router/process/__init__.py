"""Router processes: one router's wiring (`main`), its workers, child supervision, and
the security settings at work."""
