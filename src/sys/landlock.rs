// placeholder until the sandbox helper lands
