"""NeMo Gym's environment API (`nemo_gym.base_resources_server`, `server_utils`, `openai_utils`, `config_types`,
`judge`, `reward_profile`, `prompt`, `global_config`), written over our own server base so that a NeMo Gym
resources-server folder runs here unchanged. The top-level modules of those names re-export from here."""
