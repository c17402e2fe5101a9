"""The Hydra config tree (YAML). A package only so that `hydra.initialize_config_module("physiotouch.conf")` finds
it; physiotouch's own entry points read the folder (`physiotouch.paths.CONF_DIR`)."""
