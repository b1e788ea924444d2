/*
 * ciDockerRun: runs a command in a container that goes away with its build: on abort,
 * at Jenkins' process-tree killer, and through ciCleanup should the agent die. The
 * workspace is mounted at its own path, and the command runs as the agent's user.
 */

def call(Map config = [:]) {
    Map defaults = [
        // The image to run. Required.
        image: null,
        // The command and its arguments, a list of words. A string is run by sh -c.
        // Default: the image's own command.
        command: [],
        // Variables for the container: a map [NAME: VALUE], or a list of 'NAME=VALUE' (or
        // 'NAME', taken from the build's environment).
        env: [:],
        // Mounts, as docker run -v: 'SRC:DST[:ro]', one or a list.
        volumes: [],
        // UID[:GID]. Default: the agent's, so the workspace stays the agent's.
        user: null,
        // The folder mounted at its own path. Default: $WORKSPACE.
        workspace: null,
        // The working folder in the container. Default: the current folder.
        workdir: null,
        // As docker run --network, --memory, --cpus, --shm-size and --gpus.
        network: null,
        memory: null,
        cpus: null,
        shmSize: null,
        gpus: null,
        // Seconds the command has to exit after a stop signal, before SIGKILL.
        stopTimeout: null,
        // Never remove the container (it is still stopped with the build).
        keep: false,
        // docker-init as process 1; false for engines without it.
        init: true,
        // A ccache folder kept in the store across builds; CCACHE_DIR points at it.
        ccache: null,
        // The store key of the ccache folder. Default: ccache-{os}.
        ccacheKey: null,
        // Where the ccache folder is kept: a folder, file://DIR or s3://BUCKET/PREFIX.
        store: null,
        // Fail on cache trouble instead of warning.
        strict: false,
    ]
    Map options = ciIntegration.configure('ciDockerRun', defaults, config)
    ciIntegration.require('ciDockerRun', options, 'image')

    List argv = ['run']
    ciIntegration.addPairs(argv, '--env', options.env)
    ciIntegration.addOptions(argv, '--volume', options.volumes)
    ciIntegration.addOption(argv, '--user', options.user)
    ciIntegration.addOption(argv, '--workspace', options.workspace)
    ciIntegration.addOption(argv, '--workdir', options.workdir)
    ciIntegration.addOption(argv, '--network', options.network)
    ciIntegration.addOption(argv, '--memory', options.memory)
    ciIntegration.addOption(argv, '--cpus', options.cpus)
    ciIntegration.addOption(argv, '--shm-size', options.shmSize)
    ciIntegration.addOption(argv, '--gpus', options.gpus)
    ciIntegration.addOption(argv, '--stop-timeout', options.stopTimeout)
    ciIntegration.addFlag(argv, '--keep', options.keep)
    ciIntegration.addFlag(argv, '--no-init', !ciIntegration.isTrue(options.init))
    ciIntegration.addOption(argv, '--ccache', options.ccache)
    ciIntegration.addOption(argv, '--ccache-key', options.ccacheKey)
    ciIntegration.addOption(argv, '--store', options.store)
    ciIntegration.addFlag(argv, '--strict', options.strict)
    argv << options.image
    List command = options.command instanceof CharSequence ? ['sh', '-c', options.command] : ciIntegration.words(options.command)
    if (command) {
        argv << '--'
        argv.addAll(command)
    }

    ciIntegration.execute('ciDockerRun', options, argv, false)
}
