/*
 * ciCache: folders kept across builds (ccache, pip, build trees) through a ci-integration
 * store, scoped by branch with fallback to the pull request's target and the default branch.
 *
 *   ciCache(paths: ['build/ccache'], key: 'ccache-{os}-{hash:src/**}', restoreKeys: ['ccache-{os}-']) {
 *       sh 'make'
 *   }
 *
 * restores before the body and saves after it, also when the body fails. ciCache.restore
 * and ciCache.save do one half each.
 *
 *   ciCache(paths: ['.ccache'], key: 'ccache-{os}', store: 'jenkins://',
 *           jenkinsCredentialsId: 'jenkins-api') { sh 'make' }
 *
 * keeps the cache with the build's artifacts: a save writes $WORKSPACE/.ci-integration-cache,
 * which the step archives, and the next build restores from the last successful build of its
 * branch, else of the change request's target, else of the default branch.
 */

import groovy.transform.Field

@Field final Map DEFAULTS = [
    // Folders (or files) to cache, relative to the current directory; one or a list. Required.
    paths: [],
    // The entry's key; may use {hash:GLOB,...}, {branch}, {scope}, {os} and {arch}. Required.
    key: null,
    // Key prefixes to fall back on when the key itself is not stored, newest entry first.
    restoreKeys: [],
    // Where entries live: a folder, file://DIR, s3://BUCKET/PREFIX, oci://HOST/REPOSITORY or
    // jenkins:// (the build's artifacts; jenkins:///FOLDER names the folder in the workspace).
    // Default: $CI_INTEGRATION_STORE, else a folder in the agent user's home.
    store: null,
    // Fail on cache trouble (an unreachable store, corrupt data) instead of warning.
    strict: false,
    // Fail the restore when no entry matches.
    failOnMiss: false,
    // Restore, never save.
    readOnly: false,
    // After saving, keep the store with the build's artifacts (archiveArtifacts): store must
    // then be a relative folder inside the workspace, such as '.ci-cache'. A jenkins:// store
    // is always archived.
    archive: false,
    // A username/password credential (a Jenkins user and API token) that may read this
    // project's jobs, for a jenkins:// store to read earlier builds; bound to JENKINS_USER and
    // JENKINS_TOKEN.
    jenkinsCredentialsId: null,
]

def call(Map config = [:], Closure body = null) {
    if (body == null) {
        error('ciCache: give it a body, or call ciCache.restore(...) and ciCache.save(...)')
    }
    Map restored = restore(config)
    def result
    try {
        result = body(restored)
    } catch (Throwable failure) {
        // Keep what the body built before it failed; its failure is the one to report.
        try {
            save(config)
        } catch (Throwable saveFailure) {
            echo "ciCache: not saved after the body failed: ${saveFailure.message}"
        }
        throw failure
    }
    save(config)
    return result
}

/** Restores the paths; returns [cache_hit: true|false (exact), cache_hit_kind: exact|partial|miss, matched_key:, matched_scope:, ...]. */
Map restore(Map config = [:]) {
    Map options = settle('ciCache.restore', config)
    List argv = ['cache', 'restore', '--json']
    addCommon(argv, options)
    ciIntegration.addFlag(argv, '--fail-on-miss', options.failOnMiss)
    addPaths(argv, options)
    return readJSON(text: execute('ciCache.restore', options, argv), returnPojo: true)
}

/** Saves the paths in this build's scope; returns [saved:, unchanged:, key:, scope:, ...]. */
Map save(Map config = [:]) {
    Map options = settle('ciCache.save', config)
    List argv = ['cache', 'save', '--json']
    addCommon(argv, options)
    ciIntegration.addFlag(argv, '--read-only', options.readOnly)
    addPaths(argv, options)
    Map report = readJSON(text: execute('ciCache.save', options, argv), returnPojo: true)
    if (report.archive) {
        // The CLI says what it wrote for the next builds (a jenkins:// store), by its path
        // from the workspace, wherever dir() stands: archived from there.
        dir(env.WORKSPACE) {
            archiveArtifacts(artifacts: report.archive.artifacts, excludes: report.archive.excludes,
                             allowEmptyArchive: true)
        }
    } else if (ciIntegration.isTrue(options.archive) && !jenkinsStore(options)) {
        archiveArtifacts(artifacts: "${options.store}/**", allowEmptyArchive: true)
    }
    return report
}

private boolean jenkinsStore(Map options) {
    return (options.store ?: env.CI_INTEGRATION_STORE ?: '').toString().startsWith('jenkins://')
}

private String execute(String step, Map options, List argv) {
    if (!options.jenkinsCredentialsId) {
        return ciIntegration.execute(step, options, argv, true)
    }
    List credentials = [usernamePassword(credentialsId: options.jenkinsCredentialsId,
        usernameVariable: 'JENKINS_USER', passwordVariable: 'JENKINS_TOKEN')]
    return withCredentials(credentials) {
        ciIntegration.execute(step, options, argv, true)
    }
}

private Map settle(String step, Map config) {
    Map options = ciIntegration.configure(step, DEFAULTS, config)
    ciIntegration.require(step, options, 'paths')
    ciIntegration.require(step, options, 'key')
    if (ciIntegration.isTrue(options.archive) && !jenkinsStore(options)) {
        String store = options.store?.toString() ?: ''
        if (!store || store.startsWith('/') || store.contains('://') || store.tokenize('/').contains('..')) {
            error("${step}: archive needs store to be a relative folder inside the workspace, such as '.ci-cache'")
        }
    }
    return options
}

private void addCommon(List argv, Map options) {
    ciIntegration.addOption(argv, '--key', options.key)
    ciIntegration.addOptions(argv, '--restore-key', options.restoreKeys)
    ciIntegration.addOption(argv, '--store', options.store)
    ciIntegration.addFlag(argv, '--strict', options.strict)
}

private void addPaths(List argv, Map options) {
    argv << '--'
    argv.addAll(ciIntegration.words(options.paths))
}
