/*
 * ciCleanup: removes the containers of ci-integration whose build is over (owner gone,
 * Jenkins or GitHub says so, or too old); never any other container. For the end of a
 * pipeline (post { always { ciCleanup() } }) and for a cron-triggered job on each agent.
 */

def call(Map config = [:]) {
    Map defaults = [
        // Remove containers that nothing else can judge once they are this old: 30m, 12h, 1d.
        maxAge: '1d',
        // Leave a container whose owner process is gone alone until it is this old.
        grace: '1m',
        // Say what would go, remove nothing.
        dryRun: false,
        // A username/password credential (a Jenkins user and API token) to ask this Jenkins
        // whether a build still runs; bound to JENKINS_USER and JENKINS_TOKEN.
        jenkinsCredentialsId: null,
        // A secret-text credential (a GitHub token) to ask GitHub whether a workflow run
        // still runs; bound to GITHUB_TOKEN.
        githubCredentialsId: null,
    ]
    Map options = ciIntegration.configure('ciCleanup', defaults, config)

    List argv = ['cleanup']
    ciIntegration.addOption(argv, '--max-age', options.maxAge)
    ciIntegration.addOption(argv, '--grace', options.grace)
    ciIntegration.addFlag(argv, '--dry-run', options.dryRun)

    List credentials = []
    if (options.jenkinsCredentialsId) {
        credentials << usernamePassword(credentialsId: options.jenkinsCredentialsId,
            usernameVariable: 'JENKINS_USER', passwordVariable: 'JENKINS_TOKEN')
    }
    if (options.githubCredentialsId) {
        credentials << string(credentialsId: options.githubCredentialsId, variable: 'GITHUB_TOKEN')
    }
    if (credentials) {
        withCredentials(credentials) {
            ciIntegration.execute('ciCleanup', options, argv, false)
        }
    } else {
        ciIntegration.execute('ciCleanup', options, argv, false)
    }
}
