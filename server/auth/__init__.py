"""Users, teams, projects and API tokens; who is calling and which teams they may see."""
