/*
 * ciIntegration: runs any ci-integration command that has no step of its own (cache list,
 * cache prune, image save and load), and holds the plumbing every ci* step shares: install
 * the CLI once per workspace, run it with every argument shell-quoted, and fail the step
 * with the CLI's own message. The steps turn arguments into command lines; the CLI does
 * the rest.
 */

import groovy.transform.Field

// The name the library is loaded under (Manage Jenkins -> Global Trusted Pipeline
// Libraries): Jenkins says its version in env['library.ci-integration.version'].
@Field final String LIBRARY_NAME = 'ci-integration'

// Settings every ci* step accepts besides its own arguments.
@Field final Map SETTINGS = [
    // What pip installs into the workspace's virtual environment: a requirement, a path or
    // a URL. Default: $CI_INTEGRATION_PIP_SPEC, else the library's own repository,
    // $CI_INTEGRATION_GIT_URL, at the version the library was loaded at (the CLI and the
    // steps of one commit), with the S3 client when the store is s3://.
    pipSpec: null,
    // A ci-integration already installed on the agent, run instead of installing one.
    // Default: $CI_INTEGRATION_CLI.
    cli: null,
    // The Python (3.10 or newer) that makes the virtual environment.
    python: 'python3',
]

// The CLI's one-line error messages: 'ci-integration: error: ...' for a failure,
// 'ci-integration SUBCOMMAND: error: ...' for bad arguments.
@Field final String ERROR_LINE = '^ci-integration[a-z -]*: error: '
@Field final String ERROR_MARK = ': error: '

def call(Map config = [:]) {
    Map defaults = [
        // The CLI's arguments, one word each: ['cache', 'prune', '--max-size=10G']. Required.
        args: [],
        // Return the CLI's standard output (say, with --json) instead of printing it.
        returnStdout: false,
    ]
    Map options = configure('ciIntegration', defaults, config)
    require('ciIntegration', options, 'args')
    return execute('ciIntegration', options, words(options.args), isTrue(options.returnStdout))
}

/** The user's map over the step's defaults and the shared settings; an unknown key fails. */
Map configure(String step, Map defaults, Map config) {
    Map known = SETTINGS + defaults
    List unknown = []
    for (Object key in config.keySet()) {
        if (!known.containsKey(key)) {
            unknown << key
        }
    }
    if (unknown) {
        error("${step}: unknown argument ${unknown.join(', ')} (see ${help(step)})")
    }
    return known + config
}

void require(String step, Map options, String key) {
    Object value = options[key]
    if (value == null || value.toString().trim() == '' || (value instanceof Collection && value.isEmpty())) {
        error("${step}: the argument ${key} is required (see ${help(step)})")
    }
}

/** The help page of a step: ciCache.restore is described in ciCache.txt. */
String help(String step) {
    return "${step.tokenize('.')[0]}.txt"
}

/** A list of words from a list, a single value, or nothing. */
List words(Object value) {
    if (value == null) {
        return []
    }
    return value instanceof Collection ? new ArrayList(value) : [value]
}

boolean isTrue(Object value) {
    return value == true || value?.toString() == 'true'
}

/** `--flag=VALUE`, one word, so that a value starting with '-' is never read as an option. */
void addOption(List argv, String flag, Object value) {
    if (value != null && value.toString() != '') {
        argv << "${flag}=${value}".toString()
    }
}

void addOptions(List argv, String flag, Object values) {
    for (Object value in words(values)) {
        addOption(argv, flag, value)
    }
}

void addFlag(List argv, String flag, Object value) {
    if (isTrue(value)) {
        argv << flag
    }
}

/** `--flag=NAME=VALUE` for each entry of a map; a list's items go as they are. */
void addPairs(List argv, String flag, Object pairs) {
    if (pairs instanceof Map) {
        for (Object name in pairs.keySet()) {
            addOption(argv, flag, "${name}=${pairs[name]}")
        }
    } else {
        addOptions(argv, flag, pairs)
    }
}

/** One shell word: single-quoted, each ' written as '\'' so that nothing in it is expanded. */
String quote(Object value) {
    return "'" + value.toString().replace("'", "'\\''") + "'"
}

/**
 * Runs ci-integration with ARGV for STEP. With capture, returns what the CLI printed on its
 * standard output (its --json report); without, the output goes to the log and null is
 * returned. A CLI that fails fails the step with the CLI's own one-line message.
 */
String execute(String step, Map options, List argv, boolean capture) {
    if (!isUnix()) {
        error("${step}: ci-integration runs on Linux and macOS agents only")
    }
    if (!env.WORKSPACE) {
        error("${step}: call it inside a node block: it needs a workspace")
    }
    if (!(options.cli ?: env.CI_INTEGRATION_CLI) && !installSpec(options, argv)) {
        error("${step}: nothing says where ci-integration comes from: set CI_INTEGRATION_GIT_URL"
              + " to the library's repository, or pipSpec (or CI_INTEGRATION_PIP_SPEC), or cli")
    }
    String output = sh(
        script: script(options, argv, capture),
        returnStdout: true,
        encoding: 'UTF-8',
        label: "ci-integration ${argv[0]}"
    )
    // The script prints the CLI's exit code, then its last error line, then its output.
    int first = output.indexOf('\n')
    int second = first < 0 ? -1 : output.indexOf('\n', first + 1)
    if (second < 0) {
        error("${step}: ci-integration ${argv[0]} gave no exit status (see the log above)")
    }
    String code = output.substring(0, first).trim()
    String message = output.substring(first + 1, second)
    if (code != '0') {
        int mark = message.indexOf(ERROR_MARK)
        if (mark >= 0) {
            error("${step}: ${message.substring(mark + ERROR_MARK.length())}")
        }
        error("${step}: ci-integration ${argv[0]} exited with code ${code ?: 'unknown'}")
    }
    return capture ? output.substring(second + 1) : null
}

/** What pip installs: the step's pipSpec, $CI_INTEGRATION_PIP_SPEC, else the library's repository. */
String installSpec(Map options, List argv) {
    String spec = options.pipSpec ?: env.CI_INTEGRATION_PIP_SPEC
    if (spec) {
        return spec
    }
    String url = env.CI_INTEGRATION_GIT_URL
    if (!url) {
        return null
    }
    String version = env["library.${LIBRARY_NAME}.version"] ?: 'main'
    String store = env.CI_INTEGRATION_STORE ?: ''
    for (Object word in argv) {
        if (word.toString().startsWith('--store=')) {
            store = word.toString().substring('--store='.length())
        }
    }
    // The name is needed only with an extra (and pip refuses it with a file: URL).
    return store.startsWith('s3://') ? "ci-integration[s3] @ git+${url}@${version}" : "git+${url}@${version}"
}

/**
 * The shell script for one CLI run. Only constant text and quoted words: no value from
 * the user is ever read by the shell as code. Standard error goes to the log as it comes
 * and to a file, from which the last error line is taken.
 */
String script(Map options, List argv, boolean capture) {
    // Jenkins traces every line (sh -x); only the CLI's command line is worth reading.
    List lines = ['{ set +x; } 2>/dev/null']
    List command
    String cli = options.cli ?: env.CI_INTEGRATION_CLI
    if (cli) {
        command = [cli]
    } else {
        String venv = "${env.WORKSPACE}@tmp/ci-integration/venv"
        String spec = installSpec(options, argv)
        // A release is installed once per workspace; a path or URL once per build, since
        // what it points at may change under the same name.
        String installed = spec ==~ /[A-Za-z0-9._-]+==[A-Za-z0-9._+!-]+/ ? spec : "${spec} for ${env.BUILD_TAG}"
        lines << "ci_venv=${quote(venv)}"
        lines << "ci_spec=${quote(spec)}"
        lines << "ci_installed=${quote(installed)}"
        lines << 'if [ "$(cat "$ci_venv/ci-integration.installed" 2>/dev/null)" != "$ci_installed" ]; then'
        lines << '  echo "ci-integration: installing $ci_installed into $ci_venv" >&2'
        lines << "  if ! { rm -rf \"\$ci_venv\" && ${quote(options.python)} -m venv \"\$ci_venv\" >&2 &&"
        lines << '      "$ci_venv/bin/python" -m pip install --quiet --disable-pip-version-check "$ci_spec" >&2; }; then'
        // Told like a failure of the CLI itself, so that the step says what went wrong.
        lines << '    printf \'%s\\n\' 1 "ci-integration: error: could not install $ci_spec into $ci_venv (see the log above)"'
        lines << '    exit 0'
        lines << '  fi'
        lines << '  printf \'%s\\n\' "$ci_installed" >"$ci_venv/ci-integration.installed"'
        lines << 'fi'
        command = ["${venv}/bin/python", '-m', 'ci_integration']
    }
    List quoted = []
    for (Object word in command + argv) {
        quoted << quote(word)
    }
    String output = capture ? ' >"$ci_status/out"' : ''
    lines << 'ci_status="$(mktemp -d)"'
    lines << "( ci_rc=0; set -x; ${quoted.join(' ')} 2>&1${output} || ci_rc=\$?; { set +x; } 2>/dev/null; echo \"\$ci_rc\" >\"\$ci_status/rc\" ) | tee \"\$ci_status/log\" >&2"
    lines << "printf '%s\\n' \"\$(cat \"\$ci_status/rc\")\" \"\$(grep -a '${ERROR_LINE}' \"\$ci_status/log\" | tail -n 1)\""
    if (capture) {
        lines << 'cat "$ci_status/out"'
    }
    lines << 'rm -rf "$ci_status"'
    return lines.join('\n') + '\n'
}
