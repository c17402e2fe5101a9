"""Configs written for hydra-optuna-sweeper (lightning-hydra-template's among them) name
`hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper` as their sweeper: that name runs physiotouch's
sweeper. This package replaces that plugin (whose last release pins optuna<3); uninstall the plugin beside it."""
