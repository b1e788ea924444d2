/*
 * ciContext: what ci-integration knows of this build (provider, branch, pull request,
 * cache scopes), as a map: def context = ciContext(); echo "cache scope: ${context.scope}"
 */

def call(Map config = [:]) {
    Map defaults = [:] // ciContext has no arguments of its own, only the shared settings.
    Map options = ciIntegration.configure('ciContext', defaults, config)
    String report = ciIntegration.execute('ciContext', options, ['context', '--json'], true)
    return readJSON(text: report, returnPojo: true)
}
