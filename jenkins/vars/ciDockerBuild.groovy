/*
 * ciDockerBuild: builds an image with every stage cached through a ci-integration store
 * (or a registry), restored before the build and saved after it, also when it fails.
 * Returns the build report (stages, where their cache came from, steps cached).
 */

def call(Map config = [:]) {
    Map defaults = [
        // The image to build, NAME:TAG. Required.
        tag: null,
        // The build context folder, relative to the current directory.
        context: '.',
        // The Dockerfile. Default: CONTEXT/Dockerfile.
        dockerfile: null,
        // The stage to build. Default: the last one.
        target: null,
        // Build arguments: a map [NAME: VALUE], or a list of 'NAME=VALUE' (or 'NAME', taken
        // from the environment).
        buildArgs: [:],
        // Paths copied out of a built stage: 'STAGE:/path/in/image=DIR', one or a list.
        exports: [],
        // Cache stage images in this registry (HOST/REPO) instead of the store.
        registry: null,
        // Where the cache lives: a folder, file://DIR or s3://BUCKET/PREFIX.
        // Default: $CI_INTEGRATION_STORE, else a folder in the agent user's home.
        store: null,
        // The docker client. Default: $CI_INTEGRATION_DOCKER, else docker.
        docker: null,
        // How to build: buildx, buildkit or legacy. Default: auto, the best the client can do.
        builder: null,
        // Carry RUN --mount=type=cache folders (ccache, pip) across builds.
        mountCache: true,
        // Cache mount ids to leave out, one or a list.
        mountCacheExclude: [],
        // The image with a shell that copies cache mounts in and out.
        // Default: the base image of the stage that uses the mount.
        mountHelperImage: null,
        // Restore the cache, never save it.
        readOnly: false,
        // Fail on cache trouble (an unreachable store, corrupt data) instead of warning.
        strict: false,
    ]
    Map options = ciIntegration.configure('ciDockerBuild', defaults, config)
    ciIntegration.require('ciDockerBuild', options, 'tag')
    ciIntegration.require('ciDockerBuild', options, 'context')

    List argv = ['build', '--json']
    ciIntegration.addOption(argv, '--tag', options.tag)
    ciIntegration.addOption(argv, '--file', options.dockerfile)
    ciIntegration.addOption(argv, '--target', options.target)
    ciIntegration.addPairs(argv, '--build-arg', options.buildArgs)
    ciIntegration.addOptions(argv, '--export', options.exports)
    ciIntegration.addOption(argv, '--registry', options.registry)
    ciIntegration.addOption(argv, '--store', options.store)
    ciIntegration.addOption(argv, '--docker', options.docker)
    ciIntegration.addOption(argv, '--builder', options.builder)
    ciIntegration.addFlag(argv, '--no-mount-cache', !ciIntegration.isTrue(options.mountCache))
    ciIntegration.addOptions(argv, '--mount-cache-exclude', options.mountCacheExclude)
    ciIntegration.addOption(argv, '--mount-helper-image', options.mountHelperImage)
    ciIntegration.addFlag(argv, '--read-only', options.readOnly)
    ciIntegration.addFlag(argv, '--strict', options.strict)
    argv << '--'
    argv << options.context

    String report = ciIntegration.execute('ciDockerBuild', options, argv, true)
    return readJSON(text: report, returnPojo: true)
}
