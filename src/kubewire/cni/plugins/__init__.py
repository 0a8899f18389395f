"""kubewire's CNI plugins. Each module has `run(command, env, stdin, host_netns)` and `main()`.

The registry is data (plugin executable name -> module), imported lazily by the plugin
server and baked into the shims by `kubewire.cni.shim.install_plugins`.
"""

PLUGINS: dict[str, str] = {
    "kubewire-bridge": "kubewire.cni.plugins.bridge",
    "kubewire-ipam": "kubewire.cni.plugins.ipam",
    "kubewire-loopback": "kubewire.cni.plugins.loopback",
}
